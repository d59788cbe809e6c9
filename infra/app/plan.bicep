// Flex Consumption plan (Linux only; one app per plan).

@description('Name of the App Service plan.')
param name string

@description('Location of the plan.')
param location string = resourceGroup().location

@description('Tags applied to the plan.')
param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

output id string = plan.id
output name string = plan.name
